use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::meter::{display_model, format_usd};
use super::{Price, PriceTable, Usage};
use crate::input::RequestSpec;

/// The output a request is expected to generate, for the "expected" cost: at
/// most this many tokens, and never more than its `max_tokens`. A stated guess
/// (chat answers are usually far below their `max_tokens`); embeddings have a
/// `max_output` of 0, hence an expected output of 0.
pub const EXPECTED_OUTPUT_TOKENS_PER_REQUEST: u64 = 256;

/// The limits a run will be paced under, for the minimum duration.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EstimateLimits {
    /// Requests per minute.
    pub rpm: Option<f64>,
    /// Requests per second.
    pub rps: Option<f64>,
    /// Tokens per minute (each request charged prompt + max output, as
    /// providers charge at admission).
    pub tpm: Option<f64>,
}

/// One model's share of an estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelEstimate {
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub expected_output_tokens: u64,
    pub max_output_tokens: u64,
    /// `None` when the model has no price.
    pub price: Option<Price>,
    pub cost_min_usd: Option<f64>,
    pub cost_expected_usd: Option<f64>,
    pub cost_max_usd: Option<f64>,
    /// The same through a batch API (`--via batch`), at batch prices.
    pub batch_cost_min_usd: Option<f64>,
    pub batch_cost_expected_usd: Option<f64>,
    pub batch_cost_max_usd: Option<f64>,
}

/// What `pacer estimate` reports: tokens, a cost range and the shortest
/// possible run, without sending anything.
///
/// Costs: `min` is the prompt at the input price and no output at all; `max`
/// is the prompt plus every request's `max_tokens` at the output price;
/// `expected` is the prompt plus [`EXPECTED_OUTPUT_TOKENS_PER_REQUEST`] a
/// request. No prompt-cache discount is assumed. The costs are `None` when any
/// request's model has no price (the total is then unknown; `by_model` has the
/// known parts and `unknown_models` names the rest).
#[derive(Debug, Clone, Serialize)]
pub struct EstimateReport {
    pub requests: u64,
    pub input_tokens: u64,
    pub expected_output_tokens: u64,
    pub max_output_tokens: u64,
    pub cost_min_usd: Option<f64>,
    pub cost_max_usd: Option<f64>,
    pub cost_expected_usd: Option<f64>,
    /// The same range through a batch API (`pacer run --via batch`), at
    /// batch prices ([`Price::batch`]: half the live price unless the
    /// prices file says otherwise).
    pub batch_cost_min_usd: Option<f64>,
    pub batch_cost_max_usd: Option<f64>,
    pub batch_cost_expected_usd: Option<f64>,
    /// The physical limit: the most binding of `requests / rate` and
    /// `charged tokens / tpm`, in seconds. A conservative lower bound: the
    /// provider's first burst is not subtracted. 0 when no limit is given.
    pub min_duration_s: f64,
    /// Which limit sets `min_duration_s` (`"rpm"`, `"rps"` or `"tpm"`).
    pub duration_bound_by: Option<String>,
    pub by_model: Vec<ModelEstimate>,
    pub unknown_models: Vec<String>,
}

/// Add up `requests` (streamed: one at a time, nothing kept but per-model
/// sums) into an [`EstimateReport`].
pub fn estimate<I: IntoIterator<Item = RequestSpec>>(
    requests: I,
    prices: &PriceTable,
    limits: &EstimateLimits,
) -> EstimateReport {
    struct Sums {
        price: Option<Price>,
        requests: u64,
        input: u64,
        expected_output: u64,
        max_output: u64,
    }
    let mut models: BTreeMap<String, Sums> = BTreeMap::new();
    let mut charged_tokens: u64 = 0;
    for spec in requests {
        let model = spec.model.clone().unwrap_or_default();
        let sums = models.entry(model).or_insert_with_key(|model| Sums {
            price: prices.lookup(model),
            requests: 0,
            input: 0,
            expected_output: 0,
            max_output: 0,
        });
        sums.requests += 1;
        sums.input += spec.estimate.prompt;
        sums.max_output += spec.estimate.max_output;
        sums.expected_output += spec
            .estimate
            .max_output
            .min(EXPECTED_OUTPUT_TOKENS_PER_REQUEST);
        charged_tokens += spec.estimate.total();
    }

    let cost = |price: Option<Price>, input: u64, output: u64| {
        price.map(|p| {
            p.cost(&Usage {
                prompt_tokens: input,
                cached_tokens: 0,
                completion_tokens: output,
            })
        })
    };
    let by_model: Vec<ModelEstimate> = models
        .into_iter()
        .map(|(model, s)| {
            let batch = s.price.map(|p| p.batch());
            ModelEstimate {
                model: display_model(&model).to_string(),
                requests: s.requests,
                input_tokens: s.input,
                expected_output_tokens: s.expected_output,
                max_output_tokens: s.max_output,
                price: s.price,
                cost_min_usd: cost(s.price, s.input, 0),
                cost_expected_usd: cost(s.price, s.input, s.expected_output),
                cost_max_usd: cost(s.price, s.input, s.max_output),
                batch_cost_min_usd: cost(batch, s.input, 0),
                batch_cost_expected_usd: cost(batch, s.input, s.expected_output),
                batch_cost_max_usd: cost(batch, s.input, s.max_output),
            }
        })
        .collect();
    let unknown_models: Vec<String> = by_model
        .iter()
        .filter(|m| m.price.is_none())
        .map(|m| m.model.clone())
        .collect();
    let total =
        |f: fn(&ModelEstimate) -> Option<f64>| -> Option<f64> { by_model.iter().map(f).sum() };
    let requests: u64 = by_model.iter().map(|m| m.requests).sum();

    let mut min_duration_s = 0.0;
    let mut duration_bound_by = None;
    let bounds = [
        ("rpm", limits.rpm, requests as f64 * 60.0),
        ("rps", limits.rps, requests as f64),
        ("tpm", limits.tpm, charged_tokens as f64 * 60.0),
    ];
    for (name, rate, work) in bounds {
        if let Some(rate) = rate.filter(|r| *r > 0.0 && r.is_finite()) {
            let seconds = work / rate;
            if seconds > min_duration_s {
                min_duration_s = seconds;
                duration_bound_by = Some(name.to_string());
            }
        }
    }

    EstimateReport {
        requests,
        input_tokens: by_model.iter().map(|m| m.input_tokens).sum(),
        expected_output_tokens: by_model.iter().map(|m| m.expected_output_tokens).sum(),
        max_output_tokens: by_model.iter().map(|m| m.max_output_tokens).sum(),
        cost_min_usd: total(|m| m.cost_min_usd),
        cost_max_usd: total(|m| m.cost_max_usd),
        cost_expected_usd: total(|m| m.cost_expected_usd),
        batch_cost_min_usd: total(|m| m.batch_cost_min_usd),
        batch_cost_max_usd: total(|m| m.batch_cost_max_usd),
        batch_cost_expected_usd: total(|m| m.batch_cost_expected_usd),
        min_duration_s,
        duration_bound_by,
        by_model,
        unknown_models,
    }
}

impl EstimateReport {
    /// The report as a table for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let usd = |v: Option<f64>| v.map_or_else(|| "unknown".to_string(), format_usd);
        let _ = writeln!(out, "requests          {}", thousands(self.requests));
        let _ = writeln!(out, "input tokens      {}", thousands(self.input_tokens));
        let _ = writeln!(
            out,
            "output tokens     {} expected, {} at most",
            thousands(self.expected_output_tokens),
            thousands(self.max_output_tokens)
        );
        let range = |min: Option<f64>, exp: Option<f64>, max: Option<f64>| match (min, exp, max) {
            (Some(min), Some(exp), Some(max)) => Some(format!(
                "{} to {} (expected {})",
                format_usd(min),
                format_usd(max),
                format_usd(exp)
            )),
            _ => None,
        };
        let batch = range(
            self.batch_cost_min_usd,
            self.batch_cost_expected_usd,
            self.batch_cost_max_usd,
        );
        let cost = match range(self.cost_min_usd, self.cost_expected_usd, self.cost_max_usd) {
            Some(live) => live,
            None => {
                let n = self.unknown_models.len();
                let (noun, verb) = if n == 1 {
                    ("model", "has")
                } else {
                    ("models", "have")
                };
                format!(
                    "unknown ({noun} {} {verb} no price; add it with --prices)",
                    self.unknown_models.join(", ")
                )
            }
        };
        let _ = writeln!(out, "cost              {cost}");
        if let Some(batch) = batch {
            let _ = writeln!(
                out,
                "batch cost        {batch} with --via batch (results within 24 h)"
            );
        }
        let duration = match &self.duration_bound_by {
            Some(limit) => format!(
                "{} (set by --{limit}; a lower bound: the provider's first burst is not subtracted)",
                format_duration(self.min_duration_s)
            ),
            None => "no limit given (--rpm, --rps, --tpm)".to_string(),
        };
        let _ = writeln!(out, "minimum duration  {duration}");

        if !self.by_model.is_empty() {
            let width = self
                .by_model
                .iter()
                .map(|m| m.model.len())
                .max()
                .unwrap_or(0)
                .max(5);
            let _ = writeln!(
                out,
                "\n{:<width$}  {:>10}  {:>14}  {:>14}  {:>12}  {:>12}  {:>12}  {:>14}",
                "model",
                "requests",
                "input tokens",
                "max output",
                "cost min",
                "expected",
                "cost max",
                "batch expected"
            );
            for m in &self.by_model {
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>10}  {:>14}  {:>14}  {:>12}  {:>12}  {:>12}  {:>14}",
                    m.model,
                    thousands(m.requests),
                    thousands(m.input_tokens),
                    thousands(m.max_output_tokens),
                    usd(m.cost_min_usd),
                    usd(m.cost_expected_usd),
                    usd(m.cost_max_usd),
                    usd(m.batch_cost_expected_usd)
                );
            }
        }
        let _ = write!(
            out,
            "\ncost min: the prompts at the input price and no output; cost max: every request \
             generates its max_tokens;\nexpected: up to {EXPECTED_OUTPUT_TOKENS_PER_REQUEST} output \
             tokens a request (a guess; none for embeddings). No prompt-cache discount assumed.\n"
        );
        out
    }
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<String> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|group| group.iter().map(|&b| char::from(b)).collect())
        .collect();
    groups.join(",")
}

/// `90.0` → `1m 30s`; `7325` → `2h 02m 05s`; under a minute with a decimal.
fn format_duration(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let total = seconds.round() as u64;
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else {
        format!("{m}m {s:02}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::TokenEstimate;

    fn spec(id: &str, url: &str, model: Option<&str>, prompt: u64, max_output: u64) -> RequestSpec {
        RequestSpec {
            custom_id: id.to_string(),
            method: "POST".to_string(),
            url: url.to_string(),
            body: "{}".to_string(),
            body_at: None,
            priority: 0,
            estimate: TokenEstimate { prompt, max_output },
            model: model.map(str::to_string),
            line: 1,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    fn job() -> Vec<RequestSpec> {
        vec![
            // gpt-4o-mini: $0.15 in, $0.60 out.
            spec(
                "a",
                "/v1/chat/completions",
                Some("gpt-4o-mini"),
                1_000_000,
                1000,
            ),
            spec(
                "b",
                "/v1/chat/completions",
                Some("gpt-4o-mini-2024-07-18"),
                1_000_000,
                100,
            ),
            // text-embedding-3-small: $0.02 in.
            spec(
                "c",
                "/v1/embeddings",
                Some("text-embedding-3-small"),
                500_000,
                0,
            ),
        ]
    }

    #[test]
    fn sums_tokens_and_prices_a_cost_range() {
        let r = estimate(job(), &PriceTable::builtin(), &EstimateLimits::default());
        assert_eq!(r.requests, 3);
        assert_eq!(r.input_tokens, 2_500_000);
        assert_eq!(r.max_output_tokens, 1100);
        // min(1000, 256) + min(100, 256) + 0
        assert_eq!(r.expected_output_tokens, 356);
        // min: 2M × 0.15 + 0.5M × 0.02 = 0.30 + 0.01
        assert!(close(r.cost_min_usd, 0.31), "{:?}", r.cost_min_usd);
        assert!(close(r.cost_max_usd, 0.31 + 1100.0 * 0.60 / 1e6));
        assert!(close(r.cost_expected_usd, 0.31 + 356.0 * 0.60 / 1e6));
        assert!(r.unknown_models.is_empty());
        assert_eq!(
            r.by_model.len(),
            3,
            "models are grouped by the name the requests use"
        );
        assert_eq!(r.min_duration_s, 0.0);
        assert_eq!(r.duration_bound_by, None);
    }

    #[test]
    fn minimum_duration_is_set_by_the_tightest_limit() {
        let requests: Vec<RequestSpec> = (0..100)
            .map(|i| {
                spec(
                    &i.to_string(),
                    "/v1/chat/completions",
                    Some("gpt-4.1"),
                    900,
                    100,
                )
            })
            .collect();
        let prices = PriceTable::builtin();
        let limits = |rpm, rps, tpm| EstimateLimits { rpm, rps, tpm };
        // 100 requests at 50 rpm: 120 s.
        let r = estimate(requests.clone(), &prices, &limits(Some(50.0), None, None));
        assert!((r.min_duration_s - 120.0).abs() < 1e-9);
        assert_eq!(r.duration_bound_by.as_deref(), Some("rpm"));
        // 100 × 1000 charged tokens at 20,000 tpm: 300 s beats the 120 s of rpm.
        let r = estimate(
            requests.clone(),
            &prices,
            &limits(Some(50.0), Some(10.0), Some(20_000.0)),
        );
        assert!((r.min_duration_s - 300.0).abs() < 1e-9);
        assert_eq!(r.duration_bound_by.as_deref(), Some("tpm"));
        // rps alone: 100 / 0.5 = 200 s.
        let r = estimate(requests, &prices, &limits(None, Some(0.5), None));
        assert!((r.min_duration_s - 200.0).abs() < 1e-9);
        assert!(r.to_text().contains("3m 20s"), "{}", r.to_text());
    }

    #[test]
    fn an_unknown_model_makes_the_total_unknown_not_zero() {
        let mut requests = job();
        requests.push(spec(
            "d",
            "/v1/chat/completions",
            Some("my-finetune"),
            10,
            10,
        ));
        requests.push(spec("e", "/v1/chat/completions", None, 10, 10));
        let r = estimate(requests, &PriceTable::builtin(), &EstimateLimits::default());
        assert_eq!(r.cost_min_usd, None);
        assert_eq!(r.cost_max_usd, None);
        assert_eq!(r.cost_expected_usd, None);
        assert_eq!(
            r.unknown_models,
            vec!["(none)".to_string(), "my-finetune".to_string()]
        );
        let known = r
            .by_model
            .iter()
            .find(|m| m.model == "gpt-4o-mini")
            .unwrap();
        assert!(close(known.cost_min_usd, 0.15));
        let text = r.to_text();
        assert!(
            text.contains("unknown (models (none), my-finetune have no price"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["cost_max_usd"], serde_json::Value::Null);
        assert_eq!(json["input_tokens"], 2_500_020);
    }

    #[test]
    fn the_text_report_states_its_assumptions() {
        let r = estimate(
            job(),
            &PriceTable::builtin(),
            &EstimateLimits {
                rpm: Some(60.0),
                ..Default::default()
            },
        );
        let text = r.to_text();
        assert!(text.contains("requests          3"), "{text}");
        assert!(text.contains("2,500,000"), "{text}");
        assert!(text.contains("$0.3100 to $0.3107"), "{text}");
        // The batch route, side by side: half of each figure.
        assert!(
            text.contains("batch cost        $0.1550 to $0.1553"),
            "{text}"
        );
        assert!(close(r.batch_cost_max_usd, r.cost_max_usd.unwrap() / 2.0));
        assert!(close(
            r.batch_cost_expected_usd,
            r.cost_expected_usd.unwrap() / 2.0
        ));
        assert!(text.contains("first burst is not subtracted"), "{text}");
        assert!(text.contains("256"), "{text}");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(format_duration(7325.0), "2h 02m 05s");
    }
}
