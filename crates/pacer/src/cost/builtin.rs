//! The built-in price list.
//!
//! List prices in USD per million tokens, as published by each vendor and
//! known on 2025-11-30: the standard tier (not Batch API, flex or priority),
//! prompts under 200k tokens where a vendor has long-context tiers. They are a
//! starting point, not a bill: vendors change prices, relays and enterprise
//! contracts differ, so override any row with `--prices FILE` (see
//! `examples/prices.toml`). A model missing here is reported as "unknown",
//! never priced at 0.
//!
//! Names are the vendors' own aliases; dated snapshots
//! (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`) and `provider/` prefixes
//! find these rows through `PriceTable::lookup`, and `.` matches `-`
//! (`claude-sonnet-4.5`, the spelling in the seed article, is
//! `claude-sonnet-4-5`).

use super::Price;

const fn p(input: f64, cached_input: f64, output: f64) -> Price {
    Price::new(input, Some(cached_input), output)
}

/// A model with no prompt-cache discount.
const fn nc(input: f64, output: f64) -> Price {
    Price::new(input, None, output)
}

pub(super) const BUILTIN: &[(&str, Price)] = &[
    // --- The seed article's table (its "Official" column is each model's
    // output price: $15.00, $8.00, $2.50, $0.42).
    ("claude-sonnet-4-5", p(3.00, 0.30, 15.00)),
    ("gpt-4.1", p(2.00, 0.50, 8.00)),
    ("gemini-2.5-flash", p(0.30, 0.03, 2.50)),
    // DeepSeek V3.2 is served as deepseek-chat and deepseek-reasoner.
    ("deepseek-v3.2", p(0.28, 0.028, 0.42)),
    ("deepseek-chat", p(0.28, 0.028, 0.42)),
    ("deepseek-reasoner", p(0.28, 0.028, 0.42)),
    // --- OpenAI
    ("gpt-5", p(1.25, 0.125, 10.00)),
    ("gpt-5-chat", p(1.25, 0.125, 10.00)),
    ("gpt-5-mini", p(0.25, 0.025, 2.00)),
    ("gpt-5-nano", p(0.05, 0.005, 0.40)),
    ("gpt-4.1-mini", p(0.40, 0.10, 1.60)),
    ("gpt-4.1-nano", p(0.10, 0.025, 0.40)),
    ("gpt-4o", p(2.50, 1.25, 10.00)),
    ("gpt-4o-mini", p(0.15, 0.075, 0.60)),
    ("o1", p(15.00, 7.50, 60.00)),
    ("o3", p(2.00, 0.50, 8.00)),
    ("o3-mini", p(1.10, 0.55, 4.40)),
    ("o4-mini", p(1.10, 0.275, 4.40)),
    ("gpt-4-turbo", nc(10.00, 30.00)),
    ("gpt-3.5-turbo", nc(0.50, 1.50)),
    ("text-embedding-3-small", nc(0.02, 0.0)),
    ("text-embedding-3-large", nc(0.13, 0.0)),
    ("text-embedding-ada-002", nc(0.10, 0.0)),
    // --- Anthropic (cache reads at 10% of input; cache writes are counted
    // as input, a slight underestimate of their 125%).
    ("claude-opus-4-5", p(5.00, 0.50, 25.00)),
    ("claude-opus-4-1", p(15.00, 1.50, 75.00)),
    ("claude-opus-4", p(15.00, 1.50, 75.00)),
    ("claude-opus-4-0", p(15.00, 1.50, 75.00)),
    ("claude-sonnet-4", p(3.00, 0.30, 15.00)),
    ("claude-sonnet-4-0", p(3.00, 0.30, 15.00)),
    ("claude-3-7-sonnet", p(3.00, 0.30, 15.00)),
    ("claude-3-5-sonnet", p(3.00, 0.30, 15.00)),
    ("claude-haiku-4-5", p(1.00, 0.10, 5.00)),
    ("claude-3-5-haiku", p(0.80, 0.08, 4.00)),
    ("claude-3-haiku", p(0.25, 0.03, 1.25)),
    // --- Google Gemini API (prompts up to 200k tokens).
    ("gemini-3-pro", p(2.00, 0.20, 12.00)),
    ("gemini-2.5-pro", p(1.25, 0.125, 10.00)),
    ("gemini-2.5-flash-lite", p(0.10, 0.01, 0.40)),
    ("gemini-2.0-flash", p(0.10, 0.025, 0.40)),
    ("gemini-2.0-flash-lite", nc(0.075, 0.30)),
];
