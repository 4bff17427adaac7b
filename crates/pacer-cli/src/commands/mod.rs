//! One module a subcommand: turn arguments into library calls, print, and
//! say how it ended. Errors go back to main.rs, which prints them and picks
//! the exit status.

pub mod cancel;
pub mod estimate;
pub mod export;
pub mod mock;
pub mod report;
pub mod run;
pub mod serve;
pub mod status;
pub mod verify;
pub mod worker;

use std::fmt;
use std::path::Path;

use crate::args::{EndpointArgs, InputArgs, ProviderArg};
use pacer::cost::{CostError, PriceTable};
use pacer::input::{ProviderHint, SourceOptions};

/// A usage problem found by the binary itself (exit 64); its message is one
/// sentence.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn source_options(a: &InputArgs) -> SourceOptions {
    SourceOptions {
        model: a.model.clone(),
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        template: a.template.clone(),
        split_tokens: a.split_tokens,
        overlap: a.overlap,
        provider: a.provider.map(|p| match p {
            ProviderArg::Openai => ProviderHint::OpenAi,
            ProviderArg::Anthropic => ProviderHint::Anthropic,
        }),
    }
}

fn prices(file: Option<&Path>) -> Result<PriceTable, CostError> {
    let mut table = PriceTable::builtin();
    if let Some(file) = file {
        table.load_overrides(file)?;
    }
    Ok(table)
}

/// Where requests go and with which key, from flags and the environment.
struct Endpoint {
    key_env: String,
    key: Option<String>,
    base_url: Option<String>,
}

/// Reads the key and the base URL. `--base-url` was checked at parse time; a
/// base URL from the environment is checked here the same way, naming the
/// variable.
fn endpoint(anthropic: bool, args: &EndpointArgs) -> Result<Endpoint, UsageError> {
    let api_key_env = args.api_key_env.as_str();
    let key_env = if anthropic && api_key_env == "OPENAI_API_KEY" {
        "ANTHROPIC_API_KEY"
    } else {
        api_key_env
    }
    .to_string();
    let key = std::env::var(&key_env)
        .ok()
        .filter(|k| !k.trim().is_empty());
    let base_env = if anthropic {
        "ANTHROPIC_BASE_URL"
    } else {
        "OPENAI_BASE_URL"
    };
    let base_url = match &args.base_url {
        Some(url) => Some(url.clone()),
        None => match std::env::var(base_env).ok().filter(|b| !b.is_empty()) {
            Some(url) => Some(
                crate::checks::base_url(&url)
                    .map_err(|why| UsageError(format!("${base_env} {why}")))?,
            ),
            None => None,
        },
    };
    Ok(Endpoint {
        key_env,
        key,
        base_url,
    })
}

fn default_base_url(anthropic: bool) -> &'static str {
    if anthropic {
        "https://api.anthropic.com/v1"
    } else {
        "https://api.openai.com/v1"
    }
}

/// On the first Ctrl-C or SIGTERM: print `stopping` and cancel `token` (the
/// command winds down and saves). On a second Ctrl-C: print `quitting` and
/// exit 2 at once.
fn on_stop_signal(
    token: pacer::engine::CancellationToken,
    stopping: &'static str,
    quitting: &'static str,
) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        match term.as_mut() {
            Some(t) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = t.recv() => {},
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        eprintln!("{stopping}");
        token.cancel();
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("{quitting}");
        std::process::exit(i32::from(crate::exit::STOPPED));
    });
}

/// The key and address `verify` and `cancel` talk to the provider with:
/// `None` (after one sentence naming the variable) when the key is not set.
fn keyed_transport(
    anthropic: bool,
    args: &EndpointArgs,
    timeout: std::time::Duration,
    what_key: &str,
) -> Result<Option<pacer::transport::TransportConfig>, UsageError> {
    let Endpoint {
        key_env,
        key,
        base_url,
    } = endpoint(anthropic, args)?;
    let Some(key) = key else {
        eprintln!("pacer: ${key_env} is not set; export {what_key}");
        return Ok(None);
    };
    Ok(Some(pacer::transport::TransportConfig {
        base_url: base_url.unwrap_or_else(|| default_base_url(anthropic).to_string()),
        api_key: Some(pacer::transport::ApiKey::from_env(&key_env, key)),
        timeout,
        ..pacer::transport::TransportConfig::default()
    }))
}

/// Connects the shared limits (`--redis`) for requests to `transport`'s
/// origin with its key: only their fingerprint goes to Redis.
async fn shared_limits(
    url: Option<&str>,
    transport: &pacer::transport::TransportConfig,
    limits: &pacer::engine::Limits,
) -> anyhow::Result<Option<std::sync::Arc<pacer::shared::SharedLimits>>> {
    let Some(url) = url else {
        return Ok(None);
    };
    let key = transport.api_key.as_ref().map(|k| k.expose());
    let scope = pacer::shared::Scope::new(&transport.base_url, key);
    let shared = pacer::shared::SharedLimits::connect(url, scope, limits).await?;
    eprintln!(
        "pacer: rate limits shared through Redis at {} with every pacer on {} and the same key",
        shared.url(),
        pacer::transport::display_url(&transport.base_url)
    );
    Ok(Some(shared))
}

/// The sending flags `run` and `worker` share: prices, limits, retries and
/// the budget.
fn apply_send(
    cfg: &mut pacer::engine::RunConfig,
    send: &crate::args::SendArgs,
) -> anyhow::Result<()> {
    cfg.prices = prices(send.prices.as_deref())?;
    cfg.limits = pacer::engine::Limits {
        rpm: send.rates.rpm,
        rps: send.rates.rps,
        tpm: send.rates.tpm,
        burst: send.burst,
        concurrency: send.concurrency,
    };
    cfg.retry = pacer::retry::RetryPolicy {
        max_retries: send.max_retries,
        ..pacer::retry::RetryPolicy::default()
    };
    cfg.max_cost = send.max_cost;
    cfg.max_retry_time = send.max_retry_time;
    Ok(())
}

/// The transport `run` and `worker` send with.
fn transport_config(
    send: &crate::args::SendArgs,
    base_url: String,
    api_key: Option<pacer::transport::ApiKey>,
) -> pacer::transport::TransportConfig {
    pacer::transport::TransportConfig {
        base_url,
        api_key,
        timeout: send.timeout,
        idle_timeout: send.idle_timeout,
        stream: send.stream,
        max_response_bytes: send.max_response_bytes,
        ..pacer::transport::TransportConfig::default()
    }
}
