//! `pacer verify`: the key, a model, and the limits the provider reports.

use crate::args::{ProviderArg, VerifyArgs};
use crate::Outcome;

pub async fn verify(args: VerifyArgs) -> anyhow::Result<Outcome> {
    use pacer::engine::VerifyVerdict;
    let anthropic = args.provider == Some(ProviderArg::Anthropic);
    let Some(config) = super::keyed_transport(
        anthropic,
        &args.endpoint,
        std::time::Duration::from_secs(30),
        "the API key there (or name another variable with --api-key-env)",
    )?
    else {
        return Ok(Outcome::Stopped);
    };
    let base_url = config.base_url.clone();
    let transport = pacer::transport::Transport::new(config)?;
    let models: Vec<String> = args.model.iter().cloned().collect();
    let verdict = pacer::engine::verify(&transport, anthropic, &models).await;
    let (outcome, sentence, limits) = match &verdict {
        VerifyVerdict::Refused(reason) | VerifyVerdict::Unreachable(reason) => {
            (Outcome::Stopped, reason.to_string(), None)
        }
        VerifyVerdict::ProviderDown(why) | VerifyVerdict::Inconclusive(why) => (
            Outcome::Stopped,
            format!("could not check the key at {base_url}: {why}"),
            None,
        ),
        VerifyVerdict::KeyAccepted { models, limits } => match models.first() {
            Some((m, Some(false))) => (
                Outcome::Stopped,
                format!("the key works, but {base_url} does not list model \"{m}\""),
                Some(limits),
            ),
            Some((m, Some(true))) => (
                Outcome::Done,
                format!("the key works and model \"{m}\" exists at {base_url}"),
                Some(limits),
            ),
            Some((m, None)) => (
                Outcome::Done,
                format!(
                    "the key works at {base_url} (it gave no model list to look for \"{m}\" in)"
                ),
                Some(limits),
            ),
            None => (
                Outcome::Done,
                format!("the key works at {base_url}"),
                Some(limits),
            ),
        },
    };
    if args.json {
        let limits = limits.map(limits_json);
        println!(
            "{}",
            serde_json::json!({"ok": outcome == Outcome::Done, "message": sentence, "limits": limits})
        );
    } else {
        println!("{sentence}");
        if let Some(l) = limits {
            print_limits(l);
        }
    }
    Ok(outcome)
}

fn window_json(w: &pacer::provider::RateWindow) -> serde_json::Value {
    serde_json::json!({
        "limit": w.limit,
        "remaining": w.remaining,
        "reset_s": w.reset.map(|d| d.as_secs_f64()),
    })
}

fn limits_json(l: &pacer::provider::RateLimitSnapshot) -> serde_json::Value {
    serde_json::json!({
        "requests": window_json(&l.requests),
        "tokens": window_json(&l.tokens),
        "input_tokens": window_json(&l.input_tokens),
        "output_tokens": window_json(&l.output_tokens),
    })
}

fn print_limits(l: &pacer::provider::RateLimitSnapshot) {
    if l.is_empty() {
        println!("limits: none in the provider's headers (pacer will learn them from 429s)");
        return;
    }
    for (name, w) in [
        ("requests", &l.requests),
        ("tokens", &l.tokens),
        ("input tokens", &l.input_tokens),
        ("output tokens", &l.output_tokens),
    ] {
        if w.is_empty() {
            continue;
        }
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
        let reset = w
            .reset
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_else(|| "?".into());
        println!(
            "limits: {name}: {} per minute, {} remaining, full again in {reset}",
            opt(w.limit),
            opt(w.remaining)
        );
    }
}
