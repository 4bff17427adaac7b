//! `pacer serve`: the gateway, until Ctrl-C or SIGTERM.

use anyhow::Context;
use pacer::engine::{CancellationToken, Limits};
use pacer::gateway::{ClientKeys, Gateway, ServeConfig};
use pacer::retry::RetryPolicy;
use pacer::transport::{display_url, ApiKey, TransportConfig};

use super::{default_base_url, UsageError};
use crate::args::ServeArgs;
use crate::Outcome;

pub async fn serve(args: ServeArgs) -> anyhow::Result<Outcome> {
    let client_keys = match &args.client_keys {
        Some(path) => Some(ClientKeys::load(path)?),
        None => None,
    };
    let openai = upstream(false, args.upstream.as_deref(), &args)?;
    let anthropic = upstream(true, args.anthropic_upstream.as_deref(), &args)?;
    let limits = Limits {
        rpm: args.rates.rpm,
        rps: args.rates.rps,
        tpm: args.rates.tpm,
        concurrency: args.concurrency,
        ..Limits::default()
    };
    // One pacer paces both upstreams; the OpenAI-compatible one (the
    // gateway's main upstream) names the shared scope.
    let shared = super::shared_limits(args.redis.as_deref(), &openai, &limits).await?;
    let config = ServeConfig {
        openai,
        anthropic,
        limits,
        max_wait: args.max_wait,
        max_queue: args.max_queue,
        client_keys,
        max_cost_usd: args.max_cost,
        prices: super::prices(args.prices.as_deref())?,
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        retry: RetryPolicy {
            max_retries: args.max_retries,
            ..RetryPolicy::default()
        },
        state: args.state.clone(),
        shared,
    };
    config.check_access(&args.listen)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {} (--listen)", args.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    config.check_upstreams(&addr)?;
    for (name, t) in [
        ("OpenAI-compatible", &config.openai),
        ("Anthropic", &config.anthropic),
    ] {
        let key = match t.api_key.as_ref().and_then(|k| k.source()) {
            Some(var) => format!("key from {var}"),
            None => "no key".into(),
        };
        eprintln!(
            "pacer: {name} upstream {} ({key})",
            display_url(&t.base_url)
        );
    }
    match &config.client_keys {
        None => eprintln!(
            "pacer: no --client-keys: any program on this machine may use the gateway (it listens on loopback only)"
        ),
        Some(keys) => eprintln!("pacer: {} client key(s) required", keys.len()),
    }
    let gateway = Gateway::new(config)?;
    // The first line on stdout, for scripts and tests, as `pacer mock` does.
    println!("listening on http://{addr}");
    let shutdown = CancellationToken::new();
    super::on_stop_signal(
        shutdown.clone(),
        "pacer: stopping: no new requests; answering those already taken",
        "pacer: quitting at once",
    );
    gateway.serve(listener, shutdown).await?;
    eprintln!("pacer: the gateway stopped; every request it had taken was answered");
    Ok(Outcome::Done)
}

/// One upstream's address and key: the flag, then the environment, then the
/// provider's own address.
fn upstream(
    anthropic: bool,
    flag: Option<&str>,
    args: &ServeArgs,
) -> Result<TransportConfig, UsageError> {
    let (key_env, base_env) = if anthropic {
        ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
    } else {
        ("OPENAI_API_KEY", "OPENAI_BASE_URL")
    };
    let base_url = match flag {
        Some(url) => url.to_string(),
        None => match std::env::var(base_env).ok().filter(|b| !b.is_empty()) {
            Some(url) => crate::checks::base_url(&url)
                .map_err(|why| UsageError(format!("${base_env} {why}")))?,
            None => default_base_url(anthropic).to_string(),
        },
    };
    let key = std::env::var(key_env).ok().filter(|k| !k.trim().is_empty());
    Ok(TransportConfig {
        base_url,
        api_key: key.map(|k| ApiKey::from_env(key_env, k)),
        timeout: args.timeout,
        max_response_bytes: args.max_response_bytes,
        ..TransportConfig::default()
    })
}
