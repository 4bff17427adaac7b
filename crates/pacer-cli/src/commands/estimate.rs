//! `pacer estimate`: requests, tokens, cost and minimum duration; sends nothing.

use super::{prices, source_options};
use crate::args::EstimateArgs;
use crate::Outcome;
use pacer::cost::EstimateLimits;
use pacer::input::Source;

pub fn estimate(args: EstimateArgs) -> anyhow::Result<Outcome> {
    let table = prices(args.prices.as_deref())?;
    let source = Source::open(&args.input, &source_options(&args.input_args))?;
    let mut first_error = None;
    let specs = source.requests()?.map_while(|r| match r {
        Ok(spec) => Some(spec),
        Err(e) => {
            first_error = Some(e);
            None
        }
    });
    let limits = EstimateLimits {
        rpm: args.rates.rpm,
        rps: args.rates.rps,
        tpm: args.rates.tpm,
    };
    let report = pacer::cost::estimate(specs, &table, &limits);
    if let Some(e) = first_error {
        return Err(e.into());
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(Outcome::Done)
}
