//! Cost: what a job will cost before it starts, what it costs while it runs,
//! and a cap it cannot pass.
//!
//! Money is counted from the provider's own `usage`, never from guesses, once
//! an answer is in: [`Usage::from_response`] reads every supported API's shape
//! and [`Price::cost`] prices it (cached prompt tokens at their discount).
//! Before an answer, only bounds are honest: [`estimate`] gives a range (no
//! output … every `max_tokens` used) and [`Budget`] reserves each request's
//! worst case at admission, so `--max-cost` holds even with many requests in
//! flight. A model without a price is *unknown*, reported as such and never
//! counted as free: a silent `$0` is how a bill surprises its owner.
//!
//! Prices are a table ([`PriceTable::builtin`], list prices with a date) that
//! a TOML file overrides, because relays, contracts and price changes make any
//! built-in number wrong for somebody.

mod budget;
mod builtin;
mod error;
mod estimate;
mod meter;
mod price;
mod usage;

pub use budget::{Budget, BudgetExceeded, Reservation};
pub use error::CostError;
pub use estimate::{
    estimate, EstimateLimits, EstimateReport, ModelEstimate, EXPECTED_OUTPUT_TOKENS_PER_REQUEST,
};
pub use meter::{format_usd, CostMeter, ModelSpend};
pub use price::{Price, PriceTable, BATCH_DISCOUNT};
pub use usage::Usage;
