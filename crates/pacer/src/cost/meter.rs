use std::collections::BTreeMap;

use serde::Serialize;

use super::{Price, PriceTable, Usage};

/// What one model has cost so far in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpend {
    pub model: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    /// `None` when the model has no price: unknown, not free.
    pub cost_usd: Option<f64>,
}

impl ModelSpend {
    /// Nothing spent yet on `model`; its cost is unknown (`None`) when it
    /// has no price.
    pub fn new(model: &str, priced: bool) -> ModelSpend {
        ModelSpend {
            model: model.to_string(),
            requests: 0,
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            cost_usd: priced.then_some(0.0),
        }
    }
}

/// Live spend of a run, per model, from the real `usage` of each answer.
///
/// A model without a price is "unknown", never a silent 0: its tokens are
/// still counted, [`CostMeter::has_unknown`] says so, and
/// [`CostMeter::display_total`] names it.
#[derive(Debug, Clone)]
pub struct CostMeter {
    prices: PriceTable,
    models: BTreeMap<String, ModelSpend>,
    /// Each model's price as looked up once (a lookup tries several
    /// spellings of the name; this runs on every answer).
    looked_up: BTreeMap<String, Option<Price>>,
    known_usd: f64,
}

impl CostMeter {
    pub fn new(prices: PriceTable) -> CostMeter {
        CostMeter {
            prices,
            models: BTreeMap::new(),
            looked_up: BTreeMap::new(),
            known_usd: 0.0,
        }
    }

    /// The price table this meter charges with.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Count one answered request. Returns its cost, or `None` when `model`
    /// has no price.
    pub fn record(&mut self, model: &str, usage: &Usage) -> Option<f64> {
        let price = match self.looked_up.get(model) {
            Some(price) => *price,
            None => {
                let price = self.prices.lookup(model);
                self.looked_up.insert(model.to_owned(), price);
                price
            }
        };
        let cost = price.map(|p| p.cost(usage));
        if !self.models.contains_key(model) {
            self.models
                .insert(model.to_owned(), ModelSpend::new(model, cost.is_some()));
        }
        let spend = self.models.get_mut(model).expect("inserted above");
        spend.requests += 1;
        spend.prompt_tokens += usage.prompt_tokens;
        spend.cached_tokens += usage.cached_tokens;
        spend.completion_tokens += usage.completion_tokens;
        if let (Some(total), Some(c)) = (spend.cost_usd.as_mut(), cost) {
            *total += c;
        }
        if let Some(c) = cost {
            self.known_usd += c;
        }
        cost
    }

    /// Spend of the models with a price (the unknown ones are not in it).
    pub fn total_usd(&self) -> f64 {
        self.known_usd
    }

    /// Whether some recorded model has no price.
    pub fn has_unknown(&self) -> bool {
        self.models.values().any(|m| m.cost_usd.is_none())
    }

    /// The models without a price, by name.
    pub fn unknown_models(&self) -> Vec<&str> {
        self.models
            .values()
            .filter(|m| m.cost_usd.is_none())
            .map(|m| display_model(&m.model))
            .collect()
    }

    /// Spend per model, sorted by model name.
    pub fn by_model(&self) -> Vec<ModelSpend> {
        self.models.values().cloned().collect()
    }

    /// The total for people: `$1.23`; `$1.23 + unknown (model x has no price)`
    /// when some models have no price; `unknown (model x has no price)` when
    /// none has.
    pub fn display_total(&self) -> String {
        let unknown = self.unknown_models();
        if unknown.is_empty() {
            return format_usd(self.known_usd);
        }
        let why = if unknown.len() == 1 {
            format!("model {} has no price", unknown[0])
        } else {
            format!("models {} have no price", unknown.join(", "))
        };
        let any_known = self.models.values().any(|m| m.cost_usd.is_some());
        if any_known {
            format!("{} + unknown ({why})", format_usd(self.known_usd))
        } else {
            format!("unknown ({why})")
        }
    }
}

/// A request without a model name is shown as such, not as an empty string.
pub(super) fn display_model(model: &str) -> &str {
    if model.is_empty() {
        "(none)"
    } else {
        model
    }
}

/// USD for people: cents from a dollar up (`$12.35`), four decimals below
/// (`$0.0042`), `<$0.0001` below that, so that a small real spend never reads
/// as `$0.00`.
pub fn format_usd(usd: f64) -> String {
    if usd > 0.0 && usd < 0.000_05 {
        "<$0.0001".to_string()
    } else if usd == 0.0 || usd.abs() >= 1.0 {
        format!("${usd:.2}")
    } else {
        format!("${usd:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            cached_tokens: 0,
            completion_tokens: completion,
        }
    }

    #[test]
    fn known_models_add_up() {
        let mut meter = CostMeter::new(PriceTable::builtin());
        // gpt-4o-mini: 1M prompt × $0.15 + 1M completion × $0.60 = $0.75, twice.
        assert_eq!(
            meter.record("gpt-4o-mini-2024-07-18", &usage(1_000_000, 1_000_000)),
            Some(0.75)
        );
        assert_eq!(
            meter.record("gpt-4o-mini-2024-07-18", &usage(1_000_000, 1_000_000)),
            Some(0.75)
        );
        assert!((meter.total_usd() - 1.5).abs() < 1e-12);
        assert!(!meter.has_unknown());
        assert_eq!(meter.display_total(), "$1.50");
        let spend = meter.by_model();
        assert_eq!(spend.len(), 1);
        assert_eq!(
            (
                spend[0].requests,
                spend[0].prompt_tokens,
                spend[0].completion_tokens
            ),
            (2, 2_000_000, 2_000_000)
        );
        assert_eq!(spend[0].cost_usd, Some(1.5));
    }

    #[test]
    fn an_unknown_model_is_unknown_never_zero() {
        let mut meter = CostMeter::new(PriceTable::builtin());
        assert_eq!(meter.record("my-finetune", &usage(1000, 1000)), None);
        assert!(meter.has_unknown());
        assert_eq!(meter.total_usd(), 0.0);
        assert_eq!(
            meter.display_total(),
            "unknown (model my-finetune has no price)"
        );
        assert!(!meter.display_total().contains("$0"));

        meter.record("gpt-4.1", &usage(1_000_000, 0));
        assert_eq!(
            meter.display_total(),
            "$2.00 + unknown (model my-finetune has no price)"
        );
        meter.record("", &usage(1, 1));
        assert_eq!(
            meter.display_total(),
            "$2.00 + unknown (models (none), my-finetune have no price)"
        );
        let unknown = meter
            .by_model()
            .into_iter()
            .find(|m| m.model == "my-finetune")
            .unwrap();
        assert_eq!((unknown.requests, unknown.cost_usd), (1, None));
    }

    #[test]
    fn small_amounts_never_read_as_zero() {
        assert_eq!(format_usd(0.0), "$0.00");
        assert_eq!(format_usd(0.0042), "$0.0042");
        assert_eq!(format_usd(0.000_001), "<$0.0001");
        assert_eq!(format_usd(1234.567), "$1234.57");
        let mut meter = CostMeter::new(PriceTable::builtin());
        meter.record("text-embedding-3-small", &usage(100, 0));
        assert_eq!(meter.display_total(), "<$0.0001");
    }
}
