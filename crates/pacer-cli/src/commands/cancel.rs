//! `pacer cancel`: cancel a job's batches running at the provider.

use crate::args::{CancelArgs, ProviderArg};
use crate::Outcome;

pub async fn cancel(args: CancelArgs) -> anyhow::Result<Outcome> {
    let state = match args.state {
        Some(s) => s,
        None => super::status::default_state()?,
    };
    let anthropic = args.provider == Some(ProviderArg::Anthropic);
    let Some(transport) = super::keyed_transport(
        anthropic,
        &args.endpoint,
        std::time::Duration::from_secs(60),
        "the API key the batches were sent with (or name its variable with --api-key-env)",
    )?
    else {
        return Ok(Outcome::Stopped);
    };
    let report = pacer::engine::cancel(&state, transport).await?;
    let outcome = if report.failed.is_empty() {
        Outcome::Done
    } else {
        Outcome::Stopped
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["exit_code"] = serde_json::json!(outcome.code());
        println!("{v}");
    }
    if report.cancelled.is_empty() && report.failed.is_empty() {
        eprintln!(
            "pacer: {} has no batch running at the provider",
            state.display()
        );
    }
    for c in &report.cancelled {
        eprintln!("pacer: batch {} ({}): {}", c.batch, c.id, c.status);
    }
    for f in &report.failed {
        eprintln!(
            "pacer: batch {}{} could not be cancelled: {}",
            f.batch,
            f.id.as_deref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default(),
            f.reason
        );
    }
    if !report.cancelled.is_empty() {
        eprintln!("pacer: what the cancelled batches finished is kept: `pacer run --via batch` (the same command) writes it and sends the rest in new batches");
    }
    Ok(outcome)
}
