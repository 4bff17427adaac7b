use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::builtin::BUILTIN;
use super::{CostError, Usage};
use crate::tokens::TokenEstimate;

/// A model's list price, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens.
    pub input: f64,
    /// Prompt tokens served from the provider's prompt cache; `None` means the
    /// model has no cache discount and they cost `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Completion (generated) tokens, reasoning tokens included.
    pub output: f64,
    /// Prompt tokens sent through a provider's batch API (OpenAI's Batch
    /// API, Anthropic's Message Batches); `None` means half of `input`, the
    /// discount both providers give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_input: Option<f64>,
    /// Completion tokens through a batch API; `None` means half of `output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_output: Option<f64>,
}

/// What a batch API charges against the live price when a price file does
/// not say: OpenAI and Anthropic both bill batches at 50%.
pub const BATCH_DISCOUNT: f64 = 0.5;

impl Price {
    /// Const constructor for the built-in table.
    pub(super) const fn new(input: f64, cached_input: Option<f64>, output: f64) -> Price {
        Price {
            input,
            cached_input,
            output,
            batch_input: None,
            batch_output: None,
        }
    }

    /// The price of the same tokens sent through a batch API: `batch_input`
    /// and `batch_output` where given, else half the live price; cached
    /// prompt tokens at half their live price (never above the batch input
    /// price).
    pub fn batch(&self) -> Price {
        let input = self.batch_input.unwrap_or(self.input * BATCH_DISCOUNT);
        Price {
            input,
            cached_input: self.cached_input.map(|c| (c * BATCH_DISCOUNT).min(input)),
            output: self.batch_output.unwrap_or(self.output * BATCH_DISCOUNT),
            batch_input: None,
            batch_output: None,
        }
    }

    /// The USD cost of `usage`: cached prompt tokens at `cached_input` (or
    /// `input` when the model has none), the rest of the prompt at `input`,
    /// the completion at `output`.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let uncached = usage.prompt_tokens - cached;
        let cached_price = self.cached_input.unwrap_or(self.input);
        (uncached as f64 * self.input
            + cached as f64 * cached_price
            + usage.completion_tokens as f64 * self.output)
            / 1_000_000.0
    }

    /// The most a request can cost: its whole prompt at the input price and
    /// every token it may generate at the output price. What [`super::Budget`]
    /// reserves at admission.
    pub fn max_cost(&self, estimate: &TokenEstimate) -> f64 {
        self.cost(&Usage {
            prompt_tokens: estimate.prompt,
            cached_tokens: 0,
            completion_tokens: estimate.max_output,
        })
    }
}

/// Prices by model name, with the lookup rules providers' names need.
///
/// Names are matched case-insensitively and with `.` and `-` treated alike
/// (`claude-sonnet-4.5` is `claude-sonnet-4-5`), so a relay's spelling and the
/// vendor's find the same row and an override replaces the built-in row.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// Canonical name → (name as written, price).
    rows: HashMap<String, (String, Price)>,
}

/// The shape of a `--prices` file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PricesFile {
    #[serde(default)]
    models: HashMap<String, Price>,
}

impl PriceTable {
    /// A table with no prices at all.
    pub fn empty() -> PriceTable {
        PriceTable::default()
    }

    /// The built-in list prices: the seed article's four models and today's
    /// common ones, at list prices as of late 2025 (standard tier, prompts
    /// under 200k tokens). Prices change: override them with `--prices`.
    pub fn builtin() -> PriceTable {
        let mut table = PriceTable::empty();
        for &(name, price) in BUILTIN {
            table.insert(name, price);
        }
        table
    }

    /// Set (or replace) `model`'s price.
    pub fn insert(&mut self, model: &str, price: Price) {
        self.rows
            .insert(canonical(model), (model.to_string(), price));
    }

    /// Number of models with a price.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no price at all.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The same table at batch prices ([`Price::batch`]): what a `--via
    /// batch` run is charged.
    pub fn batch_prices(&self) -> PriceTable {
        PriceTable {
            rows: self
                .rows
                .iter()
                .map(|(k, (name, price))| (k.clone(), (name.clone(), price.batch())))
                .collect(),
        }
    }

    /// Every model and its price, sorted by name.
    pub fn models(&self) -> Vec<(&str, Price)> {
        let mut all: Vec<(&str, Price)> = self
            .rows
            .values()
            .map(|(name, price)| (name.as_str(), *price))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// Read a TOML prices file (`[models."gpt-4o-mini"] input = .., cached_input
    /// = .., output = ..`, USD per million tokens) and let its rows replace or
    /// extend this table. Nothing changes when the file has any error.
    pub fn load_overrides(&mut self, path: &Path) -> Result<(), CostError> {
        let text = std::fs::read_to_string(path).map_err(|source| CostError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: PricesFile = toml::from_str(&text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(&text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            CostError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let mut models: Vec<(String, Price)> = file.models.into_iter().collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        for (model, price) in &models {
            validate(path, model, price)?;
        }
        for (model, price) in models {
            self.insert(&model, price);
        }
        Ok(())
    }

    /// `model`'s price: the exact name first, then without a dated snapshot
    /// suffix (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`,
    /// `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`), then without
    /// `provider/` prefixes (`openai/gpt-4o`, `openrouter/anthropic/...`).
    pub fn lookup(&self, model: &str) -> Option<Price> {
        candidates(model)
            .into_iter()
            .find_map(|name| self.rows.get(&canonical(&name)).map(|(_, p)| *p))
    }
}

fn validate(path: &Path, model: &str, price: &Price) -> Result<(), CostError> {
    let fields = [
        ("input", Some(price.input)),
        ("cached_input", price.cached_input),
        ("output", Some(price.output)),
        ("batch_input", price.batch_input),
        ("batch_output", price.batch_output),
    ];
    for (field, value) in fields {
        if let Some(v) = value {
            if !v.is_finite() || v < 0.0 {
                return Err(CostError::InvalidPrice {
                    path: path.to_path_buf(),
                    model: model.to_string(),
                    reason: format!(
                        "{field} = {v} is not a price (USD per million tokens, 0 or more)"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The key a name is stored and looked up under.
fn canonical(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('.', "-")
}

/// Names to try for `model`, most specific first.
fn candidates(model: &str) -> Vec<String> {
    let model = model.trim();
    let mut out = vec![model.to_string()];
    // "openrouter/anthropic/claude-x" → "anthropic/claude-x" → "claude-x".
    let mut rest = model;
    let mut stripped = Vec::new();
    while let Some((_, tail)) = rest.split_once('/') {
        stripped.push(tail.to_string());
        rest = tail;
    }
    for name in std::iter::once(model.to_string()).chain(stripped) {
        if name != model {
            out.push(name.clone());
        }
        let mut base = name;
        while let Some(shorter) = strip_version_suffix(&base) {
            out.push(shorter.clone());
            base = shorter;
        }
    }
    out
}

/// One dated-snapshot or version suffix removed, if `name` ends with one:
/// `-2024-07-18`, `-20250929`, `@20250929`, `-latest`, `-preview`, `-exp`,
/// `-001` (Gemini versions), `-preview-05-20` (Gemini previews).
fn strip_version_suffix(name: &str) -> Option<String> {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let split_tail = |len: usize| {
        let cut = name.len().checked_sub(len + 1)?;
        if !name.is_char_boundary(cut) {
            return None;
        }
        let (base, rest) = name.split_at(cut);
        let mut chars = rest.chars();
        let sep = chars.next()?;
        let tail = chars.as_str();
        (!base.is_empty() && tail.len() == len).then_some((base, sep, tail))
    };
    // -YYYY-MM-DD (OpenAI snapshots)
    if let Some((base, '-', date)) = split_tail(10) {
        let parts: Vec<&str> = date.split('-').collect();
        if let [y, m, d] = parts[..] {
            if y.len() == 4
                && y.starts_with("20")
                && m.len() == 2
                && d.len() == 2
                && [y, m, d].iter().all(|p| all_digits(p))
            {
                return Some(base.to_string());
            }
        }
    }
    // -YYYYMMDD (Anthropic snapshots) or @YYYYMMDD (Vertex AI)
    if let Some((base, '-' | '@', date)) = split_tail(8) {
        if date.starts_with("20") && all_digits(date) {
            return Some(base.to_string());
        }
    }
    for suffix in ["-latest", "-preview", "-exp"] {
        if let Some(base) = name.strip_suffix(suffix).filter(|b| !b.is_empty()) {
            return Some(base.to_string());
        }
    }
    if let Some((base, '-', version)) = split_tail(3) {
        if version.starts_with('0') && all_digits(version) {
            return Some(base.to_string());
        }
    }
    if let Some(pos) = name.rfind("-preview-") {
        let tail = &name[pos + "-preview-".len()..];
        if pos > 0 && tail.bytes().all(|c| c.is_ascii_digit() || c == b'-') {
            return Some(name[..pos].to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn usage(prompt: u64, cached: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            cached_tokens: cached,
            completion_tokens: completion,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn cost_prices_cached_uncached_and_output_tokens() {
        let mini = Price::new(0.15, Some(0.075), 0.60);
        // 600 × 0.15 + 400 × 0.075 + 500 × 0.60 = 90 + 30 + 300 = 420 per million.
        assert!(close(mini.cost(&usage(1000, 400, 500)), 0.000_42));
        // Without a cached price, cached tokens cost the input price.
        let plain = Price::new(2.0, None, 6.0);
        assert!(close(plain.cost(&usage(1_000_000, 500_000, 0)), 2.0));
        assert!(close(plain.cost(&usage(0, 0, 250_000)), 1.5));
        // More cached than prompt (a confused provider) never goes negative.
        assert!(close(mini.cost(&usage(100, 1000, 0)), 100.0 * 0.075 / 1e6));
        assert_eq!(mini.cost(&Usage::default()), 0.0);
        // Worst case: 1M prompt at $0.15 + 0.5M output at $0.60 = $0.45.
        let worst = TokenEstimate {
            prompt: 1_000_000,
            max_output: 500_000,
        };
        assert!(close(mini.max_cost(&worst), 0.45));
    }

    #[test]
    fn the_seed_articles_batch_costs_what_it_says() {
        // 10,000 requests × 1,000 tokens at Claude Sonnet 4.5's $15.00 = $150.00
        // (the article prices every token at the output price).
        let table = PriceTable::builtin();
        let sonnet = table.lookup("claude-sonnet-4.5").unwrap();
        assert!(close(sonnet.cost(&usage(0, 0, 10_000 * 1000)), 150.0));
        let outputs: Vec<f64> = [
            "claude-sonnet-4.5",
            "gpt-4.1",
            "gemini-2.5-flash",
            "deepseek-v3.2",
        ]
        .iter()
        .map(|m| table.lookup(m).unwrap().output)
        .collect();
        assert_eq!(outputs, vec![15.00, 8.00, 2.50, 0.42]);
    }

    #[test]
    fn lookup_finds_dated_snapshots_and_prefixed_names() {
        let table = PriceTable::builtin();
        let price = |m: &str| table.lookup(m);
        assert_eq!(price("gpt-4o-mini-2024-07-18"), price("gpt-4o-mini"));
        assert_ne!(price("gpt-4o-mini-2024-07-18"), price("gpt-4o"));
        assert_eq!(price("gpt-4.1-mini-2025-04-14"), price("gpt-4.1-mini"));
        assert_eq!(
            price("claude-sonnet-4-5-20250929"),
            price("claude-sonnet-4-5")
        );
        assert_eq!(
            price("claude-3-5-haiku@20241022"),
            price("claude-3-5-haiku")
        );
        assert_eq!(price("openai/gpt-4o"), price("gpt-4o"));
        assert_eq!(
            price("openrouter/anthropic/claude-sonnet-4.5"),
            price("claude-sonnet-4-5")
        );
        assert_eq!(
            price("gemini-2.5-flash-preview-05-20"),
            price("gemini-2.5-flash")
        );
        assert_eq!(price("gemini-2.0-flash-001"), price("gemini-2.0-flash"));
        assert_eq!(price("gemini-3-pro-preview"), price("gemini-3-pro"));
        assert_eq!(price("gpt-5-chat-latest"), price("gpt-5"));
        assert_eq!(price("GPT-4o-Mini"), price("gpt-4o-mini"));
        assert!(price("gpt-4o").is_some());
        // A suffix that is a version, not a date, is kept: no wrong neighbour.
        assert_eq!(strip_version_suffix("claude-sonnet-4-5"), None);
        assert_eq!(price("my-finetune"), None);
        assert_eq!(price("claude-sonnet"), None);
        assert_eq!(price(""), None);
    }

    fn write_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn overrides_replace_and_extend_the_table() {
        let f = write_file(
            "# relay prices\n[models.\"gpt-4o-mini\"]\ninput = 0.1\noutput = 0.5\n\n[models.\"my-model\"]\ninput = 1\ncached_input = 0.5\noutput = 2\n",
        );
        let mut table = PriceTable::builtin();
        let before = table.len();
        table.load_overrides(f.path()).unwrap();
        assert_eq!(table.len(), before + 1);
        assert_eq!(
            table.lookup("gpt-4o-mini-2024-07-18"),
            Some(Price::new(0.1, None, 0.5))
        );
        assert_eq!(
            table.lookup("my-model"),
            Some(Price::new(1.0, Some(0.5), 2.0))
        );
        assert_eq!(
            table.lookup("gpt-4o"),
            PriceTable::builtin().lookup("gpt-4o")
        );
        // A relay's dotted spelling replaces the vendor's row.
        let f = write_file("[models.\"claude-sonnet-4.5\"]\ninput = 2.25\noutput = 11.25\n");
        table.load_overrides(f.path()).unwrap();
        assert_eq!(
            table.lookup("claude-sonnet-4-5-20250929").unwrap().output,
            11.25
        );
    }

    #[test]
    fn a_bad_field_is_reported_with_file_and_line() {
        let f = write_file("[models.\"gpt-4o-mini\"]\ninput = 0.15\nouput = 0.60\n");
        let mut table = PriceTable::builtin();
        let err = table.load_overrides(f.path()).unwrap_err();
        match &err {
            CostError::Parse { line, message, .. } => {
                assert_eq!(*line, Some(3));
                assert!(message.contains("ouput"), "{message}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&f.path().display().to_string()), "{text}");
        assert!(text.contains("line 3"), "{text}");
        // Nothing was applied.
        assert_eq!(
            table.lookup("gpt-4o-mini"),
            PriceTable::builtin().lookup("gpt-4o-mini")
        );
    }

    #[test]
    fn syntax_errors_missing_prices_negative_prices_and_missing_files_are_errors() {
        let mut table = PriceTable::builtin();
        let syntax = write_file("[models.\"a\"]\ninput = 1\n\noutput = = 2\n");
        match table.load_overrides(syntax.path()).unwrap_err() {
            CostError::Parse { line, .. } => assert_eq!(line, Some(4)),
            other => panic!("{other:?}"),
        }
        let missing = write_file("[models.\"a\"]\ninput = 1\n");
        let err = table.load_overrides(missing.path()).unwrap_err();
        assert!(err.to_string().contains("output"), "{err}");
        let negative = write_file("[models.\"a\"]\ninput = 1\noutput = -2\n");
        let err = table.load_overrides(negative.path()).unwrap_err();
        assert!(
            matches!(&err, CostError::InvalidPrice { model, .. } if model == "a"),
            "{err}"
        );
        let gone = Path::new("/nonexistent/prices.toml");
        let err = table.load_overrides(gone).unwrap_err();
        assert!(matches!(err, CostError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/prices.toml"));
        assert_eq!(table.lookup("a"), None);
    }

    #[test]
    fn batch_prices_are_half_unless_a_file_says_otherwise() {
        let mini = PriceTable::builtin().lookup("gpt-4o-mini").unwrap();
        let batch = mini.batch();
        assert!(close(batch.input, mini.input / 2.0));
        assert!(close(batch.output, mini.output / 2.0));
        assert!(close(
            batch.cached_input.unwrap(),
            mini.cached_input.unwrap() / 2.0
        ));
        // A batch costs half the live price of the same usage.
        let u = usage(1000, 200, 500);
        assert!(close(batch.cost(&u), mini.cost(&u) / 2.0));
        let f = write_file(
            "[models.\"relay-model\"]\ninput = 1\noutput = 4\nbatch_input = 0.8\nbatch_output = 1\n",
        );
        let mut table = PriceTable::builtin();
        table.load_overrides(f.path()).unwrap();
        let relay = table.batch_prices().lookup("relay-model").unwrap();
        assert_eq!((relay.input, relay.output), (0.8, 1.0));
        assert_eq!(
            table.batch_prices().lookup("gpt-4o-mini").unwrap(),
            mini.batch()
        );
        let bad = write_file("[models.\"a\"]\ninput = 1\noutput = 2\nbatch_output = -1\n");
        let err = table.load_overrides(bad.path()).unwrap_err();
        assert!(err.to_string().contains("batch_output"), "{err}");
    }

    #[test]
    fn the_example_prices_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/prices.toml");
        let mut table = PriceTable::empty();
        table.load_overrides(&path).unwrap();
        assert_eq!(table.len(), 4);
        assert_eq!(table.lookup("claude-sonnet-4.5").unwrap().output, 11.25);
        assert_eq!(table.lookup("gpt-4.1").unwrap().output, 6.00);
    }
}
